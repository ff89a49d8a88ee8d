"""What every benchmark JSON records about where it ran: CPU model (as lscpu names it), cores,
torch version and threads, and the 1-minute load average at the start and end of the measurement."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int | None = None) -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "python": platform.python_version(), "loadavg_1min_start": round(os.getloadavg()[0], 2),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def finish(info: dict[str, Any]) -> dict[str, Any]:
    info["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    return info


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain-text table of ``rows`` with the given columns (numbers formatted compactly)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    width = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, width)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, width)))


def write_result(path: str | Path, result: dict[str, Any], info: dict[str, Any], columns: list[str]) -> None:
    """Finish ``info`` (the end load), store it as ``result["machine"]``, write the JSON to ``path``
    and print the table of ``result["rows"]`` and where it was measured."""
    import json

    result["machine"] = finish(info)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
    print_table(result["rows"], columns)
    print(f"cpu {info['cpu']}, {info['torch_threads']} thread(s), load {info['loadavg_1min_start']} -> "
          f"{info['loadavg_1min_end']}; written to {path}")
