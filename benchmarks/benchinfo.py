"""What every benchmark JSON records about where it ran: CPU model (as lscpu names it) and its widest
matmul instructions, cores, torch version and threads, and the 1-minute load average at the start and end of
the measurement."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def cpu_info(cpuinfo: str) -> tuple[str, str]:
    """(model name, widest matmul instructions) of the first CPU in ``/proc/cpuinfo`` text, "" where
    absent. CPUs of one model name differ: an "AMD EPYC" with AVX512-BF16 ran bf16 1.85x fp32, one
    with AVX2 only emulates bf16, so the instructions go with every figure."""
    name, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name, next((f.upper() for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags), "")


def _this_cpu() -> tuple[str, str]:
    try:
        name, isa = cpu_info(Path("/proc/cpuinfo").read_text())
    except OSError:
        name, isa = "", ""
    return name or platform.processor() or platform.machine(), isa


def cpu_model() -> str:
    return _this_cpu()[0]


def machine(threads: int | None = None) -> dict[str, Any]:
    """Where a measurement ran: CPU model and its widest matmul instructions (``cpu_isa``, absent when
    /proc/cpuinfo names none), cores, torch version and threads, the load average at the start."""
    import torch

    cpu, isa = _this_cpu()
    return {
        "cpu": cpu, **({"cpu_isa": isa} if isa else {}), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
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
    from glintru.storage import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=1) + "\n")  # a reader never sees half a file
    print_table(result["rows"], columns)
    print(f"cpu {info['cpu']}, {info['torch_threads']} thread(s), load {info['loadavg_1min_start']} -> "
          f"{info['loadavg_1min_end']}; written to {path}")


def with_earlier_rows(out: Path, rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """``rows`` after the rows of an existing ``out`` file that none of them replaces (same ``key``
    fields), so results can be added to the file as runs finish."""
    import json

    if not out.is_file():
        return rows
    done = {tuple(r[k] for k in key) for r in rows}
    return [r for r in json.loads(out.read_text())["rows"] if tuple(r[k] for k in key) not in done] + rows
