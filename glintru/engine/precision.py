"""Numeric precision of training and evaluation: fp32, bf16 autocast, or "auto" (bf16 where fast).

Whether bf16 pays off on a CPU is not told by its flags alone. Measured on the GLINT-RU step at
ML-1M's shape (``benchmarks/step_speed.py``, one thread): bf16 autocast was 0.89x of fp32 on an
Intel Xeon with AVX512-BF16 but no AMX, and 1.85x on an AMD EPYC (Zen 4) with AVX512-BF16. So
``auto`` takes bf16 on CPUs with AMX tiles and otherwise times one matmul both ways, once per
process (:func:`cpu_bf16_speedup`, about 0.1 s), and takes bf16 when it is at least
:data:`CPU_BF16_MIN_SPEEDUP` times faster.
"""

from __future__ import annotations

import contextlib
import functools
import time

import torch

# A probe speed-up this large left the whole step faster in bf16 (AMD EPYC: probe 2-3x, step 1.85x).
CPU_BF16_MIN_SPEEDUP = 1.5
_PROBE_SHAPE = (1024, 128, 2048)  # rows x d x items: a slice of the loss's logits matmul
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # CPU flags of native bf16 matmul instructions


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` lists them (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(reps: int = 5) -> float:
    """fp32 time over bf16-autocast time of one ``linear`` at :data:`_PROBE_SHAPE` on this CPU with
    the current torch threads (best of ``reps`` each, after a warm-up); 0.0 when the CPU has no
    bf16 instructions (``avx512_bf16``, ``amx_bf16``) to try. Measured once per process."""
    flags = _cpu_flags()
    if not flags & BF16_FLAGS:
        return 0.0
    rows, d, items = _PROBE_SHAPE
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(rows, d, generator=gen), torch.randn(items, d, generator=gen)

    def best(bf16: bool) -> float:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        times = []
        with ctx, torch.no_grad():
            for _ in range(reps + 1):
                t0 = time.perf_counter()
                torch.nn.functional.linear(x, w)
                times.append(time.perf_counter() - t0)
        return min(times[1:])

    return best(False) / best(True)


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast beats fp32 on ``device``: a CUDA GPU with bf16 support, a CPU with AMX
    tiles (``amx_bf16``), or a CPU whose measured :func:`cpu_bf16_speedup` reaches
    :data:`CPU_BF16_MIN_SPEEDUP`."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if "amx_bf16" in _cpu_flags():
        return True
    return cpu_bf16_speedup() >= CPU_BF16_MIN_SPEEDUP


def bf16_reason(device: torch.device) -> str:
    """Why :func:`fast_bf16` decides as it does on ``device``, in a few words (for the run's log);
    uses the cached probe, so it measures nothing that the decision did not."""
    if device.type == "cuda":
        return f"device {device}"
    flags = _cpu_flags()
    if "amx_bf16" in flags:
        return "this CPU has AMX tiles"
    if not flags & BF16_FLAGS:
        return "this CPU has no bf16 instructions"
    return f"bf16 matmul {cpu_bf16_speedup():.1f}x fp32 on this CPU"


def emulated_bf16_warning(precision: str, device: torch.device) -> str:
    """A warning for ``precision=bf16`` forced on a CPU that lists its flags and has no bf16
    instructions: there torch emulates bf16 matmuls, several times slower than fp32 (a [4096, 128]
    by [128, 3706] matmul, one thread, AMD EPYC with AVX2 only: 0.76 s against 0.12 s); "" otherwise."""
    flags = _cpu_flags()
    if precision != "bf16" or device.type != "cpu" or not flags or flags & BF16_FLAGS:
        return ""
    return ("warning: precision=bf16 on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16): "
            "its bf16 matmuls are emulated, several times slower than fp32; precision=auto picks fp32 here")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` where :func:`fast_bf16`, else ``"fp32"``; other values unchanged."""
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return precision


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` (CPU or CUDA) when ``precision`` is (or resolves to) bf16, else a no-op."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
