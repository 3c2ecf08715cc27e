"""What machine a measurement ran on: CPU model and its vector extensions, cores, GPU, versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# the CPU features that decide which precision is fast here (bf16 is ~30x slower without AVX-512 BF16)
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def machine() -> dict:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags")))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_flags": [f for f in VECTOR_FLAGS if f in flags], "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def describe(info: dict) -> str:
    """One line: 'AMD EPYC, 2 cores, AVX-512 BF16' (or 'AVX2 only'), plus the GPU when there is one."""
    flags = info.get("cpu_flags", [])
    vector = "AVX-512 BF16" if "avx512_bf16" in flags else ("AVX2 only" if "avx2" in flags else "no AVX2")
    text = f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores, {vector}"
    return text + (f", {info['gpu']}" if info.get("gpu") else "")
