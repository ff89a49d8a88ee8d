"""Numeric precision of training and evaluation: fp32, bf16 autocast, or "auto" (bf16 where fast)."""

from __future__ import annotations

import contextlib

import torch


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls beat fp32 on ``device``: a CUDA GPU with bf16 support, or a CPU with
    AMX tiles (``amx_bf16``). On CPUs with only AVX512-BF16, bf16 autocast measured 0.89x of fp32
    (conversions outweigh the matmuls; benchmarks/step_speed.py)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("flags") and " amx_bf16" in line for line in f)
    except OSError:
        return False


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
